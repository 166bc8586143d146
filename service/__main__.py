"""`python -m service`: the same as the `chat-service` console script."""

from service.cli import main

if __name__ == "__main__":
    main()
