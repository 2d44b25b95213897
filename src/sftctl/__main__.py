from sftctl.cli import main

main()
