//! nalcast end to end: the real binary on loopback ports, with real clients (and
//! real ffmpeg, nginx, GStreamer where a test says so). One test binary with a
//! module per area, so the server and the shared helpers are compiled and linked
//! once; `make test` runs its tests at once under cargo-nextest (tests that wait
//! on servers overlap).
mod common;

mod auth_hardening;
mod behind_proxy;
mod cli;
mod connections;
mod corpus;
mod docs;
mod faults;
mod first_hour;
mod fmp4;
mod four_streams;
mod front;
mod hls;
mod hls_cache;
mod hls_limits;
mod isolation;
mod keyframes;
mod nginx;
mod packaging;
mod publish;
mod qemu;
mod route_guard;
mod routes;
mod rpicam;
mod rtmp_login;
mod rtsp;
mod secrets;
mod security;
mod server;
mod snapshot;
mod streams;
mod v4l2;
mod webrtc;
mod websocket_protocol;
