//! Streamed hunts (`Client::hunt_stream`), what only the blocking client has: the
//! stream's type. The streaming tests are conformance scenarios both clients run
//! (`defender-testkit`, `conformance::streams`).

use defender_blocking::HuntStream;

#[test]
fn a_stream_is_send() {
    fn send<T: Send>() {}
    send::<HuntStream>();
}
