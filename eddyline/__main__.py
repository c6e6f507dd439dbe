from eddyline.cli import main

main()
