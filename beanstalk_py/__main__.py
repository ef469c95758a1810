from beanstalk_py.cli import main

main()
