-- gsc experiments: comments as the language writes them, and `gsc lsp` for
-- diagnostics as you type, formatting (vim.lsp.buf.format), hover (K) and
-- completion (<C-x><C-o>). `vim.g.gsc_path` names another gsc binary.
vim.bo.commentstring = '// %s'

local file = vim.api.nvim_buf_get_name(0)
vim.lsp.start({
  name = 'gsc',
  cmd = { vim.g.gsc_path or 'gsc', 'lsp' },
  root_dir = vim.fs.root(0, { '.git' }) or vim.fs.dirname(file),
})
