"""The `quantlab` command line: one thin module per command (parse → call the library → render), so notebooks,
recipes and the CLI run the same code. Options that mirror a model (bench settings, method options) are derived
from it (`options`); what the terminal shows is decided in one place (`console`)."""

from quantlab.cli import bench, fit, llamacpp, methods, quantize, report, run, serve  # noqa: F401  (registers the commands)
from quantlab.cli.app import app, main

__all__ = ["app", "main"]
