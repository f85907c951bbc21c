"""Pull transports: request/response, short polling (the same GET, repeated) and long polling."""

from wirelab.pull.polling import serve_poll

__all__ = ["serve_poll"]
