"""The language: grammar tables, the LALR driver, the parser, the function names."""
