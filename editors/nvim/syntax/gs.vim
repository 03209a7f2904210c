" Vim syntax file for gsc experiments (.gs): the grammar is grammar/gs.pest,
" the scopes those of editors/textmate/gs.tmLanguage.json.
if exists('b:current_syntax')
  finish
endif

syn keyword gsBlock data model train grow compare
syn keyword gsKeyword stage until same set every on to at by or
syn keyword gsUnit steps step tokens token flops flop sequences sequence seqs batches
syn keyword gsConstant true false none off
syn keyword gsArch gpt ngpt

" 256, 1_000, 3e-3, 10k, 1.5G, 10%
syn match gsNumber "\<\d[0-9_]*\(\.\d[0-9_]*\)\=\([eE][+-]\=\d[0-9_]*\)\=\([kKMGBT]\>\)\=%\="
syn match gsKey "\<\h\w*\ze\s*=\([^=]\|$\)"
syn match gsKey "\<\h\w*\ze\s\+every\>"
syn match gsCall "\<\h\w*\ze\s*("
" Defined after gsKey and gsCall: at the same column, the last match wins.
syn match gsName "\(\<\(data\|model\|compare\|grow\|stage\)\s\+\)\@<=\h\w*"
syn match gsAxis "\(\<grow\s\+\)\@<=\(d_model\|heads\|kv_heads\|ffn\|layers\|context\)\>"
syn match gsMethod "\(\<by\s\+\)\@<=\h\w*"
syn match gsOperator "<=\|[<+\-*/=×]"
syn region gsString start=+"+ end=+"+ end=+$+ oneline
syn match gsComment "//.*$" contains=@Spell
syn region gsComment start="/\*" end="\*/" contains=@Spell

hi def link gsBlock Statement
hi def link gsKeyword Keyword
hi def link gsUnit Type
hi def link gsConstant Constant
hi def link gsArch Type
hi def link gsNumber Number
hi def link gsKey Identifier
hi def link gsCall Function
hi def link gsName Title
hi def link gsAxis Special
hi def link gsMethod Function
hi def link gsOperator Operator
hi def link gsString String
hi def link gsComment Comment

let b:current_syntax = 'gs'
