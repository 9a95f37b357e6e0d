"""Images in and out: decode (uploaded bytes -> Frame), encode (mask and heat-map PNGs, thumbnails), formats."""
