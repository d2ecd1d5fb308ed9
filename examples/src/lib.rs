//! Examples live in this directory.
