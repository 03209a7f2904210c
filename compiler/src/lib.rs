//! The gsc compiler: `.gs` source → AST → checks → plan → graph IR → autodiff
//! → fusion → kernel IR.

pub mod grad;
pub mod graph;
pub mod init;
pub mod plan;
