//! Test harnesses shared by the blue-green crates' tests and the benchmark. Everything here
//! starts real programs (nginx, HTTP servers, Docker containers, a Docker Swarm of several
//! dockerds in network namespaces) on loopback or on networks the tests made, and cleans up on
//! drop, also when a test fails.

pub mod color_server;
pub mod docker;
pub mod load;
pub mod nginx;
pub mod one_shot;
pub mod swarm;
