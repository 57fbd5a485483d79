"""Small utilities every layer may use, standard library only: writing files whole (`files`), downloading from PyPI
(`pip`), and how quantlab's processes take signals (`signals`). `make setup` runs the llama.cpp build while the
rest of quantlab's dependencies are still installing, so nothing here may import a third-party package."""
