"""The media work: probing (`probe`), the timeline (`timeline`), FFmpeg command building (`commands`,
pure) and running it (`runner`), one clip to all its targets (`render`), chunked jobs (`chunks`),
joining and describing the files (`assembly`), loudness, hardware encoders and the rendition cache."""
