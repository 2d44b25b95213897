from sftctl.entry import main

main()
