//! The conformance suite: every scenario of `defender_testkit::conformance`, run by the
//! async and by the blocking client against the emulator.

use defender_testkit::conformance::{self, AsyncDriver, BlockingDriver};

macro_rules! suite {
    ($module:ident, $driver:ty) => {
        mod $module {
            use super::*;

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
