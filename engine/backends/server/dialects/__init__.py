"""The dialects an inference server speaks, one module each, found by probing at connect time.

A dialect is a :class:`~engine.backends.server.dialects.base.Dialect`: how Ponder asks for a
completion and reads the answer, how it tokenizes and detokenizes there, which path says the server
is healthy, and what the endpoint can do (tokenize, take token-id prompts, several completions in
one request, the shape of its logprobs, how many top logprobs a verdict may ask for, whether it says
its slots, its metrics, pooling). Each module defines one and registers it
(:func:`~engine.backends.server.dialects.base.register`), saying how it recognises itself;
:func:`~engine.backends.server.probing.probe_server` asks the registered dialects in their probe
order, and the first that recognises the server is the one its client holds. Nothing outside this
package names a dialect: adding one is one module here plus its test.

* ``llama_server``: llama.cpp's own ``/completion`` API (it answers ``/props``);
* ``vllm``: ``/v1/completions`` on an endpoint that tokenizes and takes token ids (vLLM, SGLang), or
  a reward model behind vLLM's pooling API;
* ``gateway``: any endpoint that refuses token-id prompts (the SGLang Model Gateway, servers that
  validate ``prompt`` as a string): text prompts, rendered and tokenized by Ponder;
* ``openai``: any other OpenAI-compatible endpoint (a proxy without ``/tokenize``).

Sessions record a dialect's ``name``: ``llama-server``, or ``openai`` for the other three.
"""
