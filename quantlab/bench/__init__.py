"""What is measured: quality (perplexity, divergence), speed, memory, cost. Never imports a method."""
