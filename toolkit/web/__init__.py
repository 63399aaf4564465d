"""The browser target: the exported model as a static site (`toolkit web`), and headless
Chromium for its tests and benchmark."""
