//! nalcast's server as a library: the binary (`main.rs`) parses the command line and
//! runs it; tests and fuzz targets reach the same code in-process.
pub mod banner;
pub mod config;
pub mod server;
pub mod streams;
