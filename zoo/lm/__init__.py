"""Everything about causal language models, in one place for a newcomer:

* `kv_cache`   the preallocated KV cache any causal-LM plugin may use (the protocol is
               `zoo.protocols.CausalLM`);
* `generation` the decoding loop (`zoo.generate`, `zoo.stream`);
* `samplers`   the standard decoding strategies (`specs` holds their pydantic specs);
* `tokenizers` byte-level and local BPE tokenizers;
* `text_data`  text corpora: reading, tokenizing to a memory-mapped file, windows;
* `trainer`    the `causal-lm` trainer on the shared engine (`specs.CausalLMTrainerSpec`);
* `commands`   `zoo generate`.
"""
