/**
 * Pure rules of the extension, kept free of JupyterLab imports so they test in plain jest.
 */

/** What the kernel's "vllama" comm sends (see vllama_jupyter/labstatus.py). */
export interface IVllamaStatus {
  loaded: boolean;
  engine: string | null;
  model: string | null;
  state: string;
  tokens_per_s: number | null;
  /** "shared with 2 kernels" (this kernel shares its engine) or "shared by another notebook". */
  shared?: string | null;
}

/** The status-bar text for a kernel's status; '' hides the item. */
export function statusText(status: IVllamaStatus | null): string {
  if (!status) {
    return '';
  }
  if (!status.loaded) {
    return status.state === 'loading' ? 'vllama: loading…' : 'vllama: no model';
  }
  const speed =
    status.tokens_per_s !== null && status.tokens_per_s !== undefined
      ? ` · ${status.tokens_per_s.toFixed(1)} tok/s`
      : '';
  const shared = status.shared ? ` · ${status.shared}` : '';
  return `vllama: ${status.engine} · ${status.model} · ${status.state}${speed}${shared}`;
}

/** A %%vllama cell: its first line is the cell magic. */
export function isVllamaCell(source: string): boolean {
  const first = source.replace(/^\s*\n/, '').split('\n', 1)[0].trim();
  return /^%%vllama(\s|$)/.test(first);
}

/** The editor language for a code cell: Markdown for a %%vllama prompt, else the notebook's. */
export function mimeTypeFor(source: string, codeMimeType: string): string {
  return isVllamaCell(source) ? 'text/x-markdown' : codeMimeType;
}

/** The source of a new %%vllama cell. */
export const NEW_CELL = '%%vllama\n';
