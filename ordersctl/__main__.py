from ordersctl.cli import app

app()
