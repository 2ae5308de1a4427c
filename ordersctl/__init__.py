"""``ordersctl``: the ops command line of lengow-orders."""
