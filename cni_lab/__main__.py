from cni_lab.cli import main

main()
