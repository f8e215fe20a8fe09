import sys

from keras_liver.cli import main

sys.exit(main())
