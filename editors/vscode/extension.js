// Starts `gsc lsp` for .gs files: diagnostics as you type, formatting,
// hover and completion. Highlighting comes from the TextMate grammar alone.
const vscode = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

let client;

function activate() {
  const command = vscode.workspace.getConfiguration('gsc').get('path', 'gsc');
  client = new LanguageClient(
    'gsc',
    'gsc lsp',
    { command, args: ['lsp'] },
    { documentSelector: [{ language: 'gs' }] },
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
