"""The node's HTTP API, its live event stream and its web page (docs/api.md).

- :mod:`.serve`: run it inside the node's trio loop (Hypercorn's trio worker);
- :mod:`.guard`: who may do what: host, origin, size, credential, rate;
- :mod:`.tokens`: the token files, login codes and page sessions;
- :mod:`.app`: the routes; :mod:`.views`: what the reads show;
- :mod:`.events`: the event stream; :mod:`.refusal`: HTTP status and body of a refusal;
- :mod:`.client`: the asyncio client bots use (httpx); :mod:`.bot_strategies`: what
  ``wattmesh bot`` posts (ZI-C, ZIP, threshold), without HTTP.
"""
