//! The gsc compiler: `.gs` source → AST → checks → plan → graph IR → autodiff
//! → fusion → kernel IR.

pub mod check;
pub mod diag;
pub mod grad;
pub mod graph;
pub mod init;
pub mod plan;
pub mod syntax;

pub use check::{check_source, Checked};
