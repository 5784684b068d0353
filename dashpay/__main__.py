from dashpay.cli.app import main

main()
