from wirelab.cli import main

main()
