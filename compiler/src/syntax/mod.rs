//! Source text → AST, and AST → canonical source text (`gsc fmt`).

mod ast;
pub mod comments;
pub mod format;
mod parser;

pub use ast::*;
pub use parser::{parse, parse_override};
