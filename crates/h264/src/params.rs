//! SPS/PPS parsing and the RFC 6381 codec string.
