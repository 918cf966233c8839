"""An app with no backend configured, for the CLI's default-store note."""

from asyncq import App

app = App("no-backend")
