from dashpay.cli import main

main()
