from whatsapp_operator.cli.main import main

raise SystemExit(main())
