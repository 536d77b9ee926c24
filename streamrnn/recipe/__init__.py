"""What a recipe says, read without torch: its settings (`schema`) and the clips its data settings
name, with their speaker splits (`datasets`).

Training and evaluation both stand on this package, so both read a recipe and draw its splits the
same way; it imports neither of them, nor deploy or the service.
"""
