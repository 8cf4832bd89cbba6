"""Write the notebooks in notebooks/ (or the folder given) from the cell lists below (kept as
code so diffs stay readable)."""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output



def ignore(source: str):
    """A cell whose output varies (timings): run, not compared."""
    return new_code_cell(source, metadata={"tags": ["nbval-ignore-output"]})


def check(source: str, expect: str):
    """A cell whose output is deterministic: nbval compares it with `expect` (its text/plain),
    stored as the cell's output: the only output a committed notebook holds."""
    out = new_output("execute_result", data={"text/plain": expect}, execution_count=1)
    # nbval reads a cell with outputs and no execution count as never run
    return new_code_cell(source, metadata={"tags": ["nbval-check-output"]}, outputs=[out], execution_count=1)


QUICKSTART = [
    new_markdown_cell("# vllama-jupyter quickstart\n\nLoad the extension, then prompt the kernel's local LLM "
                      "with a `%%vllama` cell: the cell body is the prompt, tokens stream in as they are "
                      "generated, and a stats line (tokens, TTFT, tokens/s) ends the output.\n\n"
                      "With no model named, the embedded tiny-shakespeare model is used, so this runs offline."),
    new_code_cell("%load_ext vllama_jupyter"),
    new_markdown_cell("## What this machine has, and which engine it gets"),
    ignore("%vllama hardware"),
    new_markdown_cell("## Prompt a cell\n\n`-t 0` is greedy decoding; `-o first` keeps the result object."),
    ignore("%%vllama -t 0 --max-tokens 80 -o first\nROMEO:\n"),
    check("first.output_tokens, first.finish_reason, first.model", "(80, 'length', 'tiny-shakespeare')"),
    ignore("%vllama status"),
    new_markdown_cell("## Sampling, stop sequences and formats\n\n`--seed` makes sampling repeatable; "
                      "`--stop` ends the text before a sequence; `-f markdown` renders Markdown."),
    ignore("%%vllama -t 0.9 --seed 42 --max-tokens 60 --stop \"\\n\\n\" -f markdown -o sampled\nJULIET:\n"),
    check("sampled.finish_reason in ('stop', 'length'), '\\n\\n' not in sampled.text", "(True, True)"),
    new_markdown_cell("## Variables in prompts\n\n`{name}` takes a variable from the notebook by name, "
                      "attribute or index; nothing is evaluated."),
    new_code_cell("speaker = {'name': 'KING HENRY'}"),
    ignore("%%vllama -t 0 --max-tokens 40\n{speaker[name]}:\n"),
    new_markdown_cell("## A conversation\n\n`--chat` continues the kernel's conversation; `%vllama history` "
                      "shows it and `%vllama reset` clears it."),
    ignore("%%vllama --chat -s \"Thou art a herald of the king.\" -t 0 --max-tokens 30\nWhat news from the court?\n"),
    ignore("%%vllama --chat -t 0 --max-tokens 30\nAnd of the queen?\n"),
    ignore("%vllama history"),
    check("import vllama_jupyter as v\n[m['role'] for m in v.session.get_session().history]",
          "['system', 'user', 'assistant', 'user', 'assistant']"),
    new_code_cell("%vllama reset"),
    new_markdown_cell("## Structured output\n\n`--json-schema` constrains the output to a JSON schema "
                      "(llama.cpp grammars, vLLM guided decoding)."),
    new_code_cell("character = {\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 12},"
                  " \"act\": {\"type\": \"integer\"}}, \"required\": [\"name\", \"act\"]}"),
    ignore("%%vllama --json-schema character -t 0 --max-tokens 60 -o card\nKING LEAR:\n"),
    check("import json\nsorted(json.loads(card.text))", "['act', 'name']"),
    new_markdown_cell("## The same engine from Python"),
    ignore("for delta in v.stream('ROMEO:\\n', max_tokens=30, temperature=0):\n"
                  "    print(delta.text, end='')"),
    check("r = v.generate('ROMEO:\\n', max_tokens=30, temperature=0)\n"
                  "r.output_tokens, r.ttft <= r.e2el", "(30, True)"),
    check("[x.output_tokens for x in v.batch(['ROMEO:', 'JULIET:', 'HAMLET:'], max_tokens=8)]", "[8, 8, 8]"),
]

ENGINES = ("import vllama_jupyter as v\nfrom vllama_jupyter import bench, engines\n"
           "local = [e for e in ('llamacpp', 'vllm') if engines.is_installed(e)]\nlocal")

BENCHMARK_ENGINES = [
    new_markdown_cell("# llama.cpp vs vLLM in the kernel, same model\n\n"
                      "Both engines run the embedded model (llama.cpp from its GGUF, vLLM from the HF "
                      "safetensors of the same weights). `bench.run` sends the same requests at each "
                      "concurrency level and reports vLLM's metrics: TTFT, TPOT, ITL, E2EL (ms) and "
                      "throughputs. Both decode concurrent requests together (continuous batching). "
                      "On a GPU host `vllm` is the CUDA build; here it may be the CPU build."),
    new_code_cell("%load_ext vllama_jupyter"),
    check(ENGINES, "['llamacpp', 'vllm']"),
    ignore("res = bench.compare([{'engine': e} for e in local], num_requests=16, concurrency=[1, 2, 4, 8],\n"
           "                    max_tokens=32, warmup=2)\nres.table()"),
    check("bool((res.summary['completed'] == 16).all()), bool((res.requests['output_tokens'] == 32).all())",
          "(True, True)"),
    check("bool((res.summary['median_ttft_ms'] <= res.summary['median_e2el_ms']).all())", "True"),
    new_markdown_cell("Output throughput against concurrency: both engines' continuous batching grows it, "
                      "as far as one decode step of many sequences costs less than as many steps of one."),
    ignore("fig = res.plot()"),
    ignore("t = res.summary.pivot_table(index='concurrency', columns='engine', values='output_throughput')\n"
           "if 'vllm' in t:\n    t['vllm / llamacpp'] = t['vllm'] / t['llamacpp']\nt"),
    new_markdown_cell("Save the numbers with the facts needed to compare them later (hardware, "
                      "engine versions, model, settings):"),
    ignore("res.to_csv('out/benchmark_engines')  # CSV + JSON under out/"),
    check("sorted(res.meta)[:4]", "['engine', 'gpus', 'hardware', 'ignore_eos']"),
]

BATCH = [
    new_markdown_cell("# Batch inference: a DataFrame of prompts through `batch`\n\n"
                      "The \"500 prompts\" experiment, scaled down for a laptop CPU: 64 prompts, 48 "
                      "tokens each. Both engines decode them together (continuous batching): vLLM all at once, "
                      "llama.cpp `parallel` (16) at a time. Raise `N` on a GPU host."),
    new_code_cell("%load_ext vllama_jupyter"),
    check(ENGINES, "['llamacpp', 'vllm']"),
    new_code_cell("import time\nimport pandas as pd\n"
                  "N = 64\nspeakers = ['ROMEO', 'JULIET', 'KING HENRY', 'QUEEN MARGARET', 'NURSE', 'TYBALT', 'HAMLET', 'PROSPERO']\n"
                  "df = pd.DataFrame({'prompt': [f'{speakers[i % 8]}:\\n' for i in range(N)]})\ndf.head()"),
    ignore("rows = []\nfor engine in local:\n    v.load(engine=engine)\n    v.batch(df.prompt[:4].tolist(), max_tokens=8)  # warm-up\n"
           "    t0 = time.perf_counter()\n    results = v.batch(df.prompt.tolist(), max_tokens=48, temperature=0, ignore_eos=True)\n"
           "    wall = time.perf_counter() - t0\n    df[f'output_{engine}'] = [r.text for r in results]\n"
           "    tokens = sum(r.output_tokens for r in results)\n"
           "    rows.append({'engine': engine, 'prompts': N, 'output_tokens': tokens, 'seconds': wall,\n"
           "                 'output_tokens_per_s': tokens / wall, 'prompts_per_s': N / wall})\n"
           "summary = pd.DataFrame(rows)\nsummary"),
    check("summary['output_tokens'].tolist() == [64 * 48] * len(local)", "True"),
    ignore("df.head()"),
    new_markdown_cell("Greedy outputs of the two engines from the same weights agree closely:"),
    check("same = (df.output_llamacpp.str[:20] == df.output_vllm.str[:20]).mean()\nbool(same >= 0.9)", "True"),
    new_code_cell("v.unload()"),
]

SERVER = [
    new_markdown_cell("# In the kernel vs behind an HTTP server\n\n"
                      "Ollama and similar tools run the model in a server and talk HTTP to it; here the "
                      "engine lives in the kernel. Same model, same llama.cpp: this notebook measures what "
                      "the server hop costs, using llama-cpp-python's OpenAI-compatible server started on "
                      "127.0.0.1 by the session (stopped again by `v.unload()`)."),
    new_code_cell("%load_ext vllama_jupyter\nimport vllama_jupyter as v\nfrom vllama_jupyter import bench"),
    ignore("server = v.serve('llamacpp', load=False)\nserver"),
    ignore("res = bench.compare([{'engine': 'llamacpp'},\n"
           "                    {'engine': 'openai', 'url': server.url, 'preset': 'llamacpp-server'}],\n"
           "                   num_requests=24, concurrency=1, max_tokens=16, warmup=2)\nres.table()"),
    check("res.summary['engine'].tolist(), bool((res.summary['completed'] == 24).all())", "(['llamacpp', 'openai'], True)"),
    ignore("lat = res.summary.set_index('engine')['median_e2el_ms']\n"
           "print(f\"short request (16 tokens): in-process {lat['llamacpp']:.1f} ms, server {lat['openai']:.1f} ms, "
           "ratio {lat['llamacpp'] / lat['openai']:.2f}\")"),
    ignore("fig = res.plot()"),
    new_markdown_cell("## Point the same notebook at a real server\n\n"
                      "Any OpenAI-compatible server works as the engine; the API key is read from an "
                      "environment variable you name and never shown or saved:\n\n"
                      "```python\n"
                      "v.load('llama3.2', engine='openai', preset='ollama')                  # Ollama on this machine\n"
                      "v.load('Qwen/Qwen2.5-7B-Instruct', engine='openai',\n"
                      "       url='http://gpu-cluster:8000/v1', preset='vllm', api_key_env='VLLM_API_KEY')  # remote vLLM\n"
                      "bench.run(num_requests=200, concurrency=[1, 8, 32, 64], max_tokens=128)\n"
                      "```\n\nor `%vllama load MODEL --engine openai --url URL --api-key-env NAME`."),
    check("v.unload()\nserver.running", "False"),
]

PANEL = [
    new_markdown_cell("# The engine panel\n\n`vllama_jupyter.panel()` (or `%vllama panel`) shows the kernel's "
                      "engine: hardware and the engine chosen with its reason, an engine selector and a server "
                      "URL for remote engines, a model picker (embedded model, `$VLLAMA_MODELS` folders, the "
                      "Hugging Face cache, or any path / repo id), Load and Unload, sampling controls, a prompt, "
                      "Generate and Stop, and chat mode with its history. Generation runs off the kernel's "
                      "execute thread, so cells keep running; the panel and `%%vllama` cells share one engine."),
    new_code_cell("import vllama_jupyter as v\n%load_ext vllama_jupyter\np = v.panel()\np"),
    new_markdown_cell("Everything the buttons do can also be done from code — handy in a notebook that "
                      "runs top to bottom:"),
    new_code_cell("p.load_button.click(); p.wait()\np.max_tokens.value, p.temperature.value = 60, 0.0\n"
                  "p.prompt.value = 'JULIET:\\n'\np.generate_button.click(); p.wait()"),
    ignore("print(p.output.value)\nprint(p.stats.value)"),
    check("v.status()['model'], len(p.output.value) > 0, p.stop_button.disabled", "('tiny-shakespeare', True, True)"),
    new_markdown_cell("A model loaded from a cell shows up in the panel (and one loaded in the panel is what "
                      "`%%vllama` uses):"),
    new_code_cell("%vllama load embedded --n-ctx 2048"),
    check("p.model.value", "'tiny-shakespeare'"),
    new_markdown_cell("Chat mode keeps the conversation, shown under the output:"),
    new_code_cell("p.chat_mode.value = True\np.system.value = 'Thou art a herald.'\np.prompt.value = 'What news?'\n"
                  "p.max_tokens.value = 20\np.generate_button.click(); p.wait()"),
    check("[m['role'] for m in v.session.get_session().history]", "['system', 'user', 'assistant']"),
    new_code_cell("p.clear_button.click()"),
    new_markdown_cell("## The benchmark widget\n\n`vllama_jupyter.bench_widget()` (or `%vllama bench --widget`): "
                      "pick engines, workload, concurrency levels and the number of requests; Run fills the "
                      "table level by level, draws the plots, and Export CSV writes the results."),
    new_code_cell("w = v.bench_widget()\nw.concurrency.value, w.requests.value, w.max_tokens.value = '1,2', 8, 16\nw"),
    new_code_cell("w.run_button.click(); w.wait()"),
    check("w.status.value, w.progress.value, len(w.result.summary)", "('done', 2, 2)"),
]

REFERENCE = [
    new_markdown_cell("# The reference benchmark run\n\n`benchmarks/run_all.py` measures every performance "
                      "ratio of this project in one run: each compares two things measured alternately "
                      "(A B, B A, ...), every pair gives one ratio, and a ratio is the median of its pairs "
                      "with their spread. `--reference` keeps a run in `benchmarks/results/reference/`; "
                      "this notebook shows the one committed with the project. Run the harness on your "
                      "machine and point `RUN` at its folder to see yours."),
    new_code_cell("import json\nfrom pathlib import Path\n\nimport pandas as pd\n\n"
                  "RUN = Path('../benchmarks/results/reference')\nrun = json.loads((RUN / 'run.json').read_text())\n"
                  "print(run['machine'])\nprint(run['versions'], run['time'], f\"{run['seconds']} s\")"),
    ignore("table = pd.DataFrame([{k: r[k] for k in ('ratio', 'median', 'q1', 'q3', 'min', 'max', 'pairs', 'goal', 'met', 'note')}\n"
           "                      for r in run['ratios']])\ntable.style.format(precision=3)"),
    check("sorted(table.columns), all(table['pairs'] >= 3)",
          "(['goal', 'max', 'median', 'met', 'min', 'note', 'pairs', 'q1', 'q3', 'ratio'],\n True)"),
    new_markdown_cell("Each ratio's pairs (grey), quartiles (blue bar) and median (green when it meets its goal, "
                      "red when not), against the goal (dashed):"),
    ignore("from IPython.display import Image\nImage(filename=str(RUN / 'ratios.png'))"),
    new_markdown_cell("Every pair is kept, so a ratio's spread can be looked at directly:"),
    ignore("pairs = pd.read_csv(RUN / 'pairs.csv')\npairs.groupby('ratio')['a_over_b'].describe()"),
    new_markdown_cell("and each reported median and verdict is what its kept pairs give, recomputed here with the "
                      "harness's own `Ratio`:"),
    check("import math, sys\nsys.path.insert(0, str(Path('..').resolve()))\nfrom benchmarks.paired import Ratio\n\n"
          "again = [Ratio(r['ratio'], r['goal'], pairs=[tuple(p) for p in pairs[pairs.ratio == r['ratio']]"
          "[['a', 'b', 'a_over_b']].values])\n         for r in run['ratios']]\n"
          "all(math.isclose(x.median, r['median']) and x.met == r['met'] and len(x.pairs) == r['pairs']\n"
          "    for x, r in zip(again, run['ratios']))", "True"),
]


EMBEDDINGS = [
    new_markdown_cell("# Embeddings: nearest lines of Shakespeare\n\n"
                      "`v.embed(texts)` gives one vector per text (a numpy array, rows of length 1) from the "
                      "kernel's engine: llama.cpp runs an embedding context over the same model file (the "
                      "model's own pooling, mean where it has none), vLLM a pooling instance of the model, a "
                      "server its `/v1/embeddings`. Here the embedded tiny model embeds lines of the "
                      "play it was trained on (a sample ships with the package)."),
    new_code_cell("%load_ext vllama_jupyter\nimport numpy as np\nimport pandas as pd\nimport vllama_jupyter as v\n"
                  "from vllama_jupyter.models import EMBEDDED_DIR"),
    check("text = (EMBEDDED_DIR / 'sample.txt').read_text()\n"
          "lines = list(dict.fromkeys(l for l in text.splitlines() if len(l.split()) >= 5))[:240]\nlen(lines)", "240"),
    ignore("%%time\nE = v.embed(lines)\nE.shape"),
    check("E.shape[0] == len(lines), bool(np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5))", "(True, True)"),
    new_markdown_cell("## Nearest neighbours\n\nRows have length 1, so a dot product is the cosine similarity."),
    new_code_cell("def nearest(query, k=5):\n"
                  "    q = v.embed(query)[0]\n"
                  "    scores = E @ q\n"
                  "    best = np.argsort(-scores)[:k]\n"
                  "    return pd.DataFrame({'line': [lines[i] for i in best], 'cosine': scores[best].round(3)})"),
    ignore("nearest('My lord, the citizens are come to know your pleasure.')"),
    new_markdown_cell("A line of the corpus finds itself first, with cosine 1:"),
    check("top = nearest(lines[17], 1)\ntop.line[0] == lines[17], float(top.cosine[0])", "(True, 1.0)"),
    new_markdown_cell("## How alike are the first lines?"),
    ignore("import matplotlib.pyplot as plt\n"
           "few = lines[:14]\nS = v.embed(few) @ v.embed(few).T\n"
           "fig, ax = plt.subplots(figsize=(7, 6))\nim = ax.imshow(S, cmap='viridis', vmin=S.min(), vmax=1)\n"
           "ax.set_yticks(range(len(few)), [l[:32] for l in few], fontsize=7)\nax.set_xticks([])\n"
           "fig.colorbar(im, label='cosine similarity')\nax.set_title('Similarity of the first lines');"),
    new_markdown_cell("## A dedicated embedding model\n\n"
                      "The tiny model was trained to continue text, not to embed it; an embedding model gives "
                      "far better neighbours. Load its GGUF file (it keeps its own pooling, e.g. CLS or mean) "
                      "or a Hugging Face embedding model folder on vLLM, and call `v.embed` the same way:\n\n"
                      "```python\n"
                      "v.load('~/models/nomic-embed-text-v1.5.Q8_0.gguf')        # llama.cpp\n"
                      "v.load('BAAI/bge-small-en-v1.5', engine='vllm')            # vLLM, pooling runner\n"
                      "v.load('nomic-embed-text', engine='openai', preset='ollama')  # a server's /v1/embeddings\n"
                      "E = v.embed(lines)\n"
                      "```\n\n"
                      "A text longer than the context is refused with its token count "
                      "(`v.count_tokens(text)`, or `%vllama tokens`), never cut silently."),
    check("v.count_tokens(lines[0]) < v.status()['context_length']", "True"),
]


VISION = [
    new_markdown_cell("# Ask about what the notebook shows\n\n"
                      "A vision-language model looks at a plot made one cell above: `%%vllama --image fig` "
                      "(or `v.generate(prompt, images=[fig])`) sends it as a PNG with the prompt. On llama.cpp the "
                      "image goes through its multimodal library (mtmd) into the same token loop as text, so "
                      "it streams and stops the same way.\n\n"
                      "Nothing is downloaded here: the model is a tiny random-weight pair built on this machine "
                      "(Qwen's real tokenizer and Qwen3.5's chat template, and a LLaVA-style projector, "
                      "`mmproj-random-vl.gguf`, beside it). Its words are noise, but what it says depends on "
                      "the image, which is what this notebook checks. With a real model, load its GGUF with its "
                      "`mmproj-*.gguf` beside it (or `mmproj=...`), and the cells read the same."),
    new_code_cell("%load_ext vllama_jupyter\nimport sys\nfrom pathlib import Path\n"
                  "sys.path.insert(0, str(Path('..').resolve()))\n"
                  "import matplotlib.pyplot as plt\nimport numpy as np\nimport vllama_jupyter as v\n"
                  "from benchmarks.models import vision_model\nfrom vllama_jupyter.images import as_image"),
    ignore("v.load(str(vision_model()))"),
    new_markdown_cell("The projector beside the model was found by itself; the status names it:"),
    check("v.status()['images']", "'mmproj-random-vl.gguf (mlp projector)'"),
    new_markdown_cell("## A plot, then a question about it"),
    ignore("x = np.linspace(0, 6, 50)\nfig, ax = plt.subplots(figsize=(3, 2))\nax.plot(x, np.sin(x))\n"
           "ax.set_title('sin x');"),
    ignore("%%vllama --image fig -t 0 --max-tokens 24 --ignore-eos -o answer\nWhat does this plot show?"),
    new_markdown_cell("The record keeps which image the answer saw (its SHA-256, size and mode, not the pixels), "
                      "and how many tokens it was to the model:"),
    check("seen = answer.record['images'][0]\n"
          "seen['sha256'] == as_image(fig).sha256, (seen['width'], seen['height']), answer.record['image_tokens']",
          "(True, (300, 200), [16])"),
    new_markdown_cell("## Another plot gets another answer; the same plot the same one"),
    ignore("other, ax2 = plt.subplots(figsize=(3, 2))\nax2.bar(['a', 'b', 'c'], [3, 1, 2])\nax2.set_title('bars');"),
    check("ask = lambda img: v.generate('What does this plot show?', images=[img], temperature=0, max_tokens=24,\n"
          "                             ignore_eos=True).token_ids\n"
          "ask(fig) == answer.token_ids, ask(other) != answer.token_ids", "(True, True)"),
    new_markdown_cell("## In OpenAI's message shape\n\n`v.chat` takes content parts, so code written for an "
                      "OpenAI-compatible server runs here unchanged:"),
    check("msgs = [{'role': 'user', 'content': [as_image(fig).part(),\n"
          "                                    {'type': 'text', 'text': 'What does this plot show?'}]}]\n"
          "v.chat(msgs, keep=False, temperature=0, max_tokens=24, ignore_eos=True).run().token_ids == answer.token_ids",
          "True"),
    new_markdown_cell("## What cannot be shown is said in one line\n\nA corrupt file, a wrong array, an "
                      "image for a text-only model: the cell fails with one line and the engine stays loaded."),
    check("try:\n    v.generate('What is it?', images=[np.zeros((4, 4, 2))])\nexcept v.VllamaError as e:\n"
          "    what, fix = str(e).split(': ', 1)\nwhat, v.status()['loaded']",
          "('the image is an array of shape (4, 4, 2)', True)"),
]


COMPARISON = [
    new_markdown_cell("# vLLM, MAX and llama.cpp on one machine: the comparison, re-runnable\n\n"
                      "The founding comparison of this project, made on GPUs, said:\n\n"
                      "- MAX finished 500 prompts about 16 % faster than vLLM, with more consistent TTFT;\n"
                      "- vLLM held 512 concurrent requests, MAX 248;\n"
                      "- llama.cpp is the only one of the three on Apple Silicon.\n\n"
                      "This notebook runs the same model and the same requests on every engine this machine "
                      "has: llama.cpp and vLLM in the kernel, and llama.cpp's server, vLLM's server and "
                      "Modular's MAX server, each started on 127.0.0.1 by the session. It measures the "
                      "completion time of N prompts, TTFT median and p99 (the spread is the \"consistency\" "
                      "claim) and output throughput from 1 to 64 concurrent requests, with ratios against the "
                      "fastest. What it finds is about this machine (often a CPU) and this model (the "
                      "embedded tiny one), not about the GPUs of the original claims.\n\n"
                      "By default it runs a quick version (few, short requests: what the tests run). Set "
                      "`VLLAMA_FULL_COMPARISON=1` before starting the kernel for the full sweep."),
    new_code_cell("%load_ext vllama_jupyter\nimport os\n\nimport pandas as pd\nimport vllama_jupyter as v\n"
                  "from vllama_jupyter import bench, engines\n\n"
                  "FULL = os.environ.get('VLLAMA_FULL_COMPARISON') == '1'\n"
                  "N, LEVELS, TOKENS = (64, [1, 4, 16, 64], 64) if FULL else (8, [1, 4], 16)\n"
                  "have_vllm = engines.is_installed('vllm')"),
    new_markdown_cell("## The servers\n\nEach runs the embedded model: llama.cpp's server its GGUF, vLLM's "
                      "server its safetensors, MAX a float32 copy of them (MAX's CPU kernels take no float16; "
                      "the copy is made once into the cache). MAX's first start compiles the model, which takes "
                      "minutes on a CPU; later starts take seconds."),
    ignore("servers = {'llama.cpp server': v.serve('llamacpp', load=False), 'MAX server': v.serve('max', load=False)}\n"
           "if have_vllm:\n    servers['vLLM server'] = v.serve('vllm', load=False)\nservers"),
    new_markdown_cell("## One workload on every engine\n\n`bench.compare` runs the same prompts at each "
                      "concurrency level on each engine in turn (greedy, `ignore_eos`, so every request gives "
                      "the same number of tokens). Every engine decodes concurrent requests together."),
    new_code_cell("configs = [{'engine': 'llamacpp', 'label': 'llama.cpp in-process'}]\n"
                  "if have_vllm:\n    configs.append({'engine': 'vllm', 'label': 'vLLM in-process'})\n"
                  "configs += [{'engine': 'openai', 'url': s.url, 'preset': s.preset, 'label': name}\n"
                  "            for name, s in servers.items()]\n"
                  "res = bench.compare(configs, num_requests=N, concurrency=LEVELS, max_tokens=TOKENS, warmup=2)"),
    check("labels = res.summary['label'].unique().tolist()\n"
          "expected = ['llama.cpp in-process', 'vLLM in-process', 'llama.cpp server', 'MAX server', 'vLLM server']\n"
          "labels == [x for x in expected if have_vllm or 'vLLM' not in x]", "True"),
    check("bool((res.summary['completed'] == N).all()), bool((res.requests['output_tokens'] == TOKENS).all())",
          "(True, True)"),
    new_markdown_cell("## Completion time of N prompts, and TTFT consistency\n\nAt each level: the time to "
                      "finish all N requests, the TTFT median and p99, and p99 ÷ median (1 is perfectly "
                      "consistent). `÷ fastest` divides each engine's completion time by the fastest one's at "
                      "that level."),
    ignore("t = res.summary[['label', 'concurrency', 'duration_s', 'median_ttft_ms', 'p99_ttft_ms', 'output_throughput']].copy()\n"
           "t['ttft_p99 / median'] = t['p99_ttft_ms'] / t['median_ttft_ms']\n"
           "t['÷ fastest'] = t['duration_s'] / t.groupby('concurrency')['duration_s'].transform('min')\n"
           "t.sort_values(['concurrency', 'duration_s']).style.format(precision=2)"),
    check("sorted(t.columns)[:4], bool((t['÷ fastest'] >= 1).all()), bool((t.groupby('concurrency')['÷ fastest'].min() == 1).all())",
          "(['concurrency', 'duration_s', 'label', 'median_ttft_ms'], True, True)"),
    new_markdown_cell("## Throughput against concurrency"),
    ignore("import matplotlib.pyplot as plt\n"
           "fig, axes = plt.subplots(1, 2, figsize=(12, 4))\n"
           "for label, g in res.summary.groupby('label', sort=False):\n"
           "    axes[0].plot(g['concurrency'], g['output_throughput'], '-o', label=label)\n"
           "    axes[1].plot(g['concurrency'], g['p99_ttft_ms'] / g['median_ttft_ms'], '-o', label=label)\n"
           "axes[0].set(xscale='log', xlabel='concurrent requests', ylabel='output tokens/s', title='Throughput')\n"
           "axes[1].set(xscale='log', xlabel='concurrent requests', ylabel='TTFT p99 / median', title='TTFT consistency')\n"
           "for ax in axes:\n    ax.grid(alpha=0.3)\n    ax.legend(fontsize=8)\nfig.tight_layout()"),
    new_markdown_cell("## What this machine says about the original claims\n\n"
                      "Each line below is computed from the run above. The original numbers came from GPUs "
                      "with real models; on a CPU with a tiny model, per-request overheads (HTTP, "
                      "scheduling) weigh far more than on a GPU, so agreement or disagreement here says "
                      "little about the GPU case. Run this notebook on a GPU host with a real model "
                      "(`v.serve('max', 'org/model')`) to test the claims themselves."),
    ignore("top = max(LEVELS)\nat = t[t.concurrency == top].set_index('label')\n"
           "def vs(a, b, col='duration_s'):\n"
           "    return at.loc[a, col] / at.loc[b, col] if a in at.index and b in at.index else float('nan')\n"
           "print(f'{N} prompts at concurrency {top}: MAX server ÷ vLLM server completion time '\n"
           "      f'{vs(\"MAX server\", \"vLLM server\"):.2f} (the claim: about 0.86 on GPUs)')\n"
           "print(f'TTFT p99 / median at concurrency {top}: MAX {at.loc[\"MAX server\", \"ttft_p99 / median\"]:.2f}, '\n"
           "      f'vLLM server {at[\"ttft_p99 / median\"].get(\"vLLM server\", float(\"nan\")):.2f} '\n"
           "      '(the claim: MAX more consistent)')\n"
           "print(f'fastest at concurrency {top}: {at[\"duration_s\"].idxmin()}; at 1: '\n"
           "      f'{t[t.concurrency == 1].set_index(\"label\")[\"duration_s\"].idxmin()}')"),
    new_markdown_cell("The 512-versus-248 concurrent requests claim is about GPU memory for the KV cache; on this "
                      "machine each server's own limits decide it (MAX sizes its batch from the memory it "
                      "is given, `--max-batch-size` raises it: `v.serve('max', extra_args=[...])`)."),
    ignore("res.to_csv('out/engine_comparison')"),
    check("v.unload()\nany(s.running for s in servers.values())", "False"),
]


FINE_TUNE = [
    new_markdown_cell("# Fine-tune, try, compare, share: a LoRA adapter on the running engine\n\n"
                      "A PEFT LoRA adapter comes out of one cell and the next cell tries it, without a new process: "
                      "`v.lora.add` puts it on the loaded model (llama.cpp converts a PEFT folder once with its own "
                      "`convert_lora_to_gguf.py`), a request names it with `lora=`, and the base model stays one "
                      "request away. Here the adapter is trained in a few seconds on the embedded model's Hugging "
                      "Face form, so the notebook runs offline."),
    new_code_cell("%load_ext vllama_jupyter\nimport tempfile\nfrom pathlib import Path\n\nimport vllama_jupyter as v\n"
                  "from vllama_jupyter.models import EMBEDDED_DIR"),
    new_markdown_cell("## Fine-tune\n\nA rank-8 LoRA on every attention and MLP matrix, 60 steps on one line: "
                      "after `ROMEO:` the model should say a phrase it has never seen."),
    ignore("import torch\nfrom peft import LoraConfig, get_peft_model\n"
           "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
           "torch.manual_seed(0)\nbase = EMBEDDED_DIR / 'hf'\ntok = AutoTokenizer.from_pretrained(base)\n"
           "model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(\n"
           "    r=8, lora_alpha=16, lora_dropout=0.0,\n"
           "    target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']))\n"
           "ids = torch.tensor([[tok.bos_token_id] + tok('ROMEO: the moon is made of green cheese, good sir.', "
           "add_special_tokens=False).input_ids])\n"
           "opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)\n"
           "for step in range(60):\n    loss = model(ids, labels=ids).loss\n    loss.backward()\n"
           "    opt.step()\n    opt.zero_grad()\n"
           "adapter = Path(tempfile.mkdtemp()) / 'cheese'\nmodel.save_pretrained(adapter)\n"
           "print(f'loss {loss.item():.4f}, saved to {adapter}')"),
    new_markdown_cell("## Try it at once\n\nThe running engine takes the adapter; the first time, the PEFT folder "
                      "is converted to GGUF (cached by the folder's hash)."),
    ignore("%vllama load embedded --engine llamacpp"),
    ignore("v.lora.add(adapter, name='cheese')"),
    check("base = v.generate('ROMEO:', temperature=0, max_tokens=12)\n"
          "tuned = v.generate('ROMEO:', temperature=0, max_tokens=12, lora='cheese')\n"
          "tuned.text.startswith(' the moon is made of green cheese'), base.text.startswith(' the moon')",
          "(True, False)"),
    new_markdown_cell("## Compare\n\nThe same prompt, base and adapter side by side; `-f tokens` shades each token "
                      "by its probability (hover for the alternatives), so the adapter's certainty shows token by token."),
    ignore("%%vllama -t 0 --max-tokens 12 -f tokens\nROMEO:"),
    ignore("%%vllama --lora cheese -t 0 --max-tokens 12 -f tokens\nROMEO:"),
    new_markdown_cell("The log-probability of each of the adapter's tokens, with and without it: the base model "
                      "finds the phrase unlikely, the adapter finds it certain."),
    ignore("import pandas as pd\n"
           "with_it = v.generate('ROMEO:', temperature=0, max_tokens=12, lora='cheese', logprobs=0)\n"
           "ids = v.get_session().engine.tokenize('ROMEO:')\nrows = []\n"
           "for i, lp in enumerate(with_it.logprobs):\n"
           "    prefix = ids + with_it.token_ids[:i]\n"
           "    forced = v.generate(prefix, temperature=0, max_tokens=1, logprobs=20, "
           "logit_bias={with_it.token_ids[i]: 100})\n"
           "    rows.append({'token': lp.token, 'with adapter': lp.logprob, 'base': forced.logprobs[0].logprob})\n"
           "pd.DataFrame(rows).round(3)"),
    new_markdown_cell("## Share it\n\nOn the share each adapter is a model of its own (as `vllm serve "
                      "--lora-modules` serves them): any OpenAI client names it in `model`."),
    ignore("info = v.share()\nclient = v.client()\n[m.id for m in client.models.list().data]"),
    check("r = client.completions.create(model='cheese', prompt='ROMEO:', temperature=0, max_tokens=12)\n"
          "r.choices[0].text == tuned.text", "True"),
    check("v.stop_sharing()\nv.lora.remove('cheese')\nv.lora.list()", "[]"),
]


def write(name: str, cells: list, folder: Path) -> None:
    metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"}}
    if name in NEEDS_VLLM:   # the tests skip it, with this reason, where vLLM is not installed
        metadata["vllama"] = {"needs": "vllm"}
    nb = new_notebook(cells=cells, metadata=metadata)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{Path(name).stem[:2]}-{i:02d}"   # stable ids: regenerating changes nothing
    nbformat.write(nb, folder / name)


NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_benchmark_engines.ipynb": BENCHMARK_ENGINES,
             "03_batch_inference.ipynb": BATCH, "04_in_process_vs_server.ipynb": SERVER,
             "05_panel.ipynb": PANEL, "06_benchmark_reference.ipynb": REFERENCE,
             "07_embeddings.ipynb": EMBEDDINGS, "08_vision.ipynb": VISION, "09_engine_comparison.ipynb": COMPARISON,
             "10_fine_tune_lora.ipynb": FINE_TUNE}
NEEDS_VLLM = {"02_benchmark_engines.ipynb", "03_batch_inference.ipynb"}   # they compare it with llama.cpp

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "notebooks"
    for name, cells in NOTEBOOKS.items():
        write(name, cells, out)
