"""``make bench``: the gateway's figures against a bare aiohttp baseline measured in the same run."""
