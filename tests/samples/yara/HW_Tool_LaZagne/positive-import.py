import sys
from lazagne.config.write_output import write_in_file, StandardOutput
from lazagne.softwares.browsers.mozilla import Mozilla
