from quantlab.cli.app import main

main()
