//! Training data.
