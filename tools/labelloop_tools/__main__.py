from labelloop_tools.cli import main

main()
