"""llama.cpp: its converter and gguf-py (from the installed runtime's own source), its quantizer (through
llama-cpp-python), and the importance matrix its k-quants and IQ types use."""

# Tokens the in-process runtime has llama.cpp evaluate per batch (n_batch, n_ubatch), and the shortest context a
# quality window opens: here, below the runtime, because the memory plan sizes llama.cpp's logits buffers by it.
BATCH_TOKENS = 512
