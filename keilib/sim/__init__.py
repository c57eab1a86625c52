"""The simulator: an emulated Wi-SUN module with a smart meter, and serial sensors."""
