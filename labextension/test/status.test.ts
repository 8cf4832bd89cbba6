import { isVllamaCell, mimeTypeFor, statusText } from '../src/status';

describe('statusText', () => {
  it('is empty (hidden) when the kernel has not loaded the extension', () => {
    expect(statusText(null)).toBe('');
  });

  it('says when nothing is loaded, or loading', () => {
    const base = { loaded: false, engine: null, model: null, tokens_per_s: null };
    expect(statusText({ ...base, state: 'idle' })).toBe('vllama: no model');
    expect(statusText({ ...base, state: 'loading' })).toBe('vllama: loading…');
  });

  it('shows engine, model, state and the last tokens/s', () => {
    const s = { loaded: true, engine: 'llamacpp', model: 'tiny-shakespeare', state: 'idle', tokens_per_s: 5123.456 };
    expect(statusText(s)).toBe('vllama: llamacpp · tiny-shakespeare · idle · 5123.5 tok/s');
    expect(statusText({ ...s, state: 'generating', tokens_per_s: null })).toBe(
      'vllama: llamacpp · tiny-shakespeare · generating'
    );
  });

  it('says when the engine is shared, and with how many kernels', () => {
    const s = { loaded: true, engine: 'llamacpp', model: 'tiny-shakespeare', state: 'idle', tokens_per_s: null };
    expect(statusText({ ...s, shared: 'shared with 2 kernels' })).toBe(
      'vllama: llamacpp · tiny-shakespeare · idle · shared with 2 kernels'
    );
    expect(statusText({ ...s, engine: 'openai', shared: 'shared by another notebook' })).toBe(
      'vllama: openai · tiny-shakespeare · idle · shared by another notebook'
    );
    expect(statusText({ ...s, shared: null })).toBe('vllama: llamacpp · tiny-shakespeare · idle');
  });
});

describe('cell highlighting rule', () => {
  it('recognises %%vllama cells only by their first line', () => {
    expect(isVllamaCell('%%vllama\nROMEO:')).toBe(true);
    expect(isVllamaCell('%%vllama -t 0 --max-tokens 5\nhi')).toBe(true);
    expect(isVllamaCell('\n%%vllama\nhi')).toBe(true);
    expect(isVllamaCell('%%vllamax\nhi')).toBe(false);
    expect(isVllamaCell('%vllama status')).toBe(false);
    expect(isVllamaCell('x = 1\n%%vllama')).toBe(false);
    expect(isVllamaCell('')).toBe(false);
  });

  it('gives Markdown to %%vllama cells and the notebook language to the rest', () => {
    expect(mimeTypeFor('%%vllama\n# Title', 'text/x-ipython')).toBe('text/x-markdown');
    expect(mimeTypeFor('print(1)', 'text/x-ipython')).toBe('text/x-ipython');
  });
});
