-- `.gs` files are gsc experiments.
vim.filetype.add({ extension = { gs = 'gs' } })
