"""llama.cpp: its converter and gguf-py (from the installed runtime's own source), its quantizer (through
llama-cpp-python), and the importance matrix its k-quants and IQ types use."""

# Tokens the in-process runtime has llama.cpp evaluate per batch (n_batch, n_ubatch), and the context it opens
# first (for speed), which the quality pass reuses for any window that fits: here, below the runtime, because the
# memory plan sizes llama.cpp's KV cache and logits buffers by them.
BATCH_TOKENS = 512
SPEED_CTX = 2048
