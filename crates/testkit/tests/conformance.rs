//! The conformance suite: every scenario of `defender_testkit::conformance`, run by the
//! async and by the blocking client against the emulator.

use defender_testkit::conformance::{self, AsyncDriver, BlockingDriver};

macro_rules! suite {
    ($module:ident, $driver:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn every_token_source_gets_a_token() {
                conformance::every_token_source_gets_a_token::<$driver>();
            }

            #[test]
            fn workload_identity_reads_the_rotated_file() {
                conformance::workload_identity_reads_the_rotated_file::<$driver>();
            }

            #[test]
            fn auto_picks_each_source_in_turn() {
                conformance::auto_picks_each_source_in_turn::<$driver>();
            }

            #[test]
            fn a_hung_azure_cli_is_killed() {
                conformance::a_hung_azure_cli_is_killed::<$driver>();
            }

            #[test]
            fn tls_trusting_the_written_certificate() {
                conformance::tls_trusting_the_written_certificate::<$driver>();
            }

            #[test]
            fn updates_are_never_doubled() {
                conformance::updates_are_never_doubled::<$driver>();
            }

            #[test]
            fn a_broken_store_or_provider_holds_no_call() {
                conformance::a_broken_store_or_provider_holds_no_call::<$driver>();
            }

            #[test]
            fn a_token_for_another_api_is_refused() {
                conformance::a_token_for_another_api_is_refused::<$driver>();
            }

            #[test]
            fn every_call_on_every_surface() {
                conformance::every_call_on_every_surface::<$driver>();
            }

            #[test]
            fn sync_hands_out_each_change_once() {
                conformance::sync_hands_out_each_change_once::<$driver>();
            }

            #[test]
            fn hunt_since_hands_out_each_row_once() {
                conformance::hunt_since_hands_out_each_row_once::<$driver>();
            }

            #[test]
            fn every_alert_call_on_every_surface() {
                conformance::every_alert_call_on_every_surface::<$driver>();
            }

            #[test]
            fn token_expiry_mid_run() {
                conformance::token_expiry_mid_run::<$driver>();
            }

            #[test]
            fn throttle_variants() {
                conformance::throttle_variants::<$driver>();
            }

            #[test]
            fn server_errors_and_resets_are_retried() {
                conformance::server_errors_and_resets_are_retried::<$driver>();
            }

            #[test]
            fn max_wait_exceeded_sends_nothing() {
                conformance::max_wait_exceeded_sends_nothing::<$driver>();
            }

            #[test]
            fn sixteen_callers_exact_limits() {
                conformance::sixteen_callers_exact_limits::<$driver>();
            }

            #[test]
            fn malformed_and_truncated_bodies() {
                conformance::malformed_and_truncated_bodies::<$driver>();
            }

            #[test]
            fn wrong_secret_is_an_auth_error() {
                conformance::wrong_secret_is_an_auth_error::<$driver>();
            }

            #[test]
            fn rows_arrive_while_the_body_does() {
                conformance::rows_arrive_while_the_body_does::<$driver>();
            }

            #[test]
            fn a_broken_stream_is_retried_only_before_rows() {
                conformance::a_broken_stream_is_retried_only_before_rows::<$driver>();
            }

            #[test]
            fn streamed_and_buffered_hunts_agree() {
                conformance::streamed_and_buffered_hunts_agree::<$driver>();
            }

            #[test]
            fn a_stream_dropped_before_its_first_item_sends_nothing() {
                conformance::a_stream_dropped_before_its_first_item_sends_nothing::<$driver>();
            }

            #[test]
            fn a_stream_dropped_early_cancels_its_call_and_settles_its_running_time() {
                conformance::a_stream_dropped_early_cancels_its_call_and_settles_its_running_time::<
                    $driver,
                >();
            }

            #[test]
            fn a_slow_consumer_gets_every_row_of_a_large_result_once_in_order() {
                conformance::a_slow_consumer_gets_every_row_of_a_large_result_once_in_order::<
                    $driver,
                >();
            }

            #[test]
            fn a_stream_reads_no_further_ahead_than_the_socket_buffers() {
                conformance::a_stream_reads_no_further_ahead_than_the_socket_buffers::<$driver>();
            }

            #[test]
            fn a_consumer_slower_than_the_request_timeout_is_not_cut_off() {
                conformance::a_consumer_slower_than_the_request_timeout_is_not_cut_off::<$driver>();
            }

            #[test]
            fn a_body_broken_before_any_row_is_retried_without_a_second_schema() {
                conformance::a_body_broken_before_any_row_is_retried_without_a_second_schema::<
                    $driver,
                >();
            }

            #[test]
            fn a_streamed_call_gives_its_summary() {
                conformance::a_streamed_call_gives_its_summary::<$driver>();
            }

            #[test]
            fn two_clients_share_one_store_at_exact_limits() {
                conformance::two_clients_share_one_store_at_exact_limits::<$driver>();
            }

            #[test]
            fn an_unavailable_store_fails_the_call_and_sends_nothing() {
                conformance::an_unavailable_store_fails_the_call_and_sends_nothing::<$driver>();
            }

            #[test]
            fn two_clients_share_a_redis_quota_at_exact_limits() {
                conformance::two_clients_share_a_redis_quota_at_exact_limits::<$driver>();
            }

            #[test]
            fn redis_quota_build_errors_are_typed() {
                conformance::redis_quota_build_errors_are_typed::<$driver>();
            }

            #[test]
            fn a_token_provider_serves_many_callers_with_one_fetch() {
                conformance::a_token_provider_serves_many_callers_with_one_fetch::<$driver>();
            }

            #[test]
            fn a_dropped_hunt_sends_no_more_windows() {
                conformance::a_dropped_hunt_sends_no_more_windows::<$driver>();
            }
        }
    };
}

suite!(async_client, AsyncDriver);
suite!(blocking_client, BlockingDriver);

#[test]
fn async_ranged_hunt_past_the_row_cap() {
    conformance::ranged_hunt_past_the_row_cap::<AsyncDriver>();
}

#[test]
fn blocking_ranged_hunt_past_the_row_cap() {
    conformance::ranged_hunt_past_the_row_cap::<BlockingDriver>();
}

#[test]
fn async_fault_soak() {
    conformance::fault_soak::<AsyncDriver>();
}

#[test]
fn blocking_fault_soak() {
    conformance::fault_soak::<BlockingDriver>();
}

#[test]
fn async_response_bodies_are_size_limited() {
    conformance::response_bodies_are_size_limited::<AsyncDriver>();
}

#[test]
fn blocking_response_bodies_are_size_limited() {
    conformance::response_bodies_are_size_limited::<BlockingDriver>();
}
