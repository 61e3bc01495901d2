//! Annex-B push parser.
