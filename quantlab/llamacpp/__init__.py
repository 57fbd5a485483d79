"""llama.cpp: its converter and gguf-py (from the installed runtime's own source), its quantizer (through
llama-cpp-python), and the importance matrix its k-quants and IQ types use."""
