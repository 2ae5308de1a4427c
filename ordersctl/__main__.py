from ordersctl.cli import cli

cli()
