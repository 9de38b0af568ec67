//! Docker runtimes.
