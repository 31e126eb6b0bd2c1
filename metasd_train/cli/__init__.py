"""The commands (`train.py`, `decode.py`, the bench's options): argument parsing and what each command
does with the library. The library never imports this package."""
