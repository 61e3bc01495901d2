//! Access-unit assembler.
