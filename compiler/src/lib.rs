//! The gsc compiler: `.gs` source → AST → checks → plan → graph IR → autodiff
//! → fusion → kernel IR.

pub mod plan;
